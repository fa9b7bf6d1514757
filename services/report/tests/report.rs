//! The report's numbers on the fixture equal independent SQL written here, directly on
//! `flows FINAL` (no `traffic` relation, no mirror: the other side of a connection within a node
//! is added by arithmetic). Exact values: the fixture's dollars are powers of two per byte.
//! Also: the rollups give the same answers as `flows`; a top list's rows and its `other` row add
//! up to the whole; filters narrow to what they say; JSON, CSV and the terminal show the same
//! values.

mod fixture;

use std::collections::BTreeMap;

use netmeter_report::bandwidth::{BandwidthTable, NodeStatus, limited};
use netmeter_report::model::{Filters, Report, Table};
use netmeter_report::options::format_time;
use netmeter_report::{Connection, Options, TimeRange, build, render};
use netmeter_tests::Stack;
use serde_json::{Value, json};

struct Setup {
    _stack: Stack,
    client: clickhouse::Client,
    connection: Connection,
    range: TimeRange,
}

async fn setup() -> Setup {
    let stack = Stack::start().await.unwrap();
    let client = stack
        .clickhouse_client()
        .with_setting("output_format_json_quote_64bit_integers", "0");
    let range = fixture::load(&client).await;
    let connection = Connection::new(&stack.clickhouse_url(), "default", "", fixture::DATABASE);
    Setup {
        _stack: stack,
        client,
        connection,
        range,
    }
}

/// The rows of `sql`, as JSON values.
async fn sql(client: &clickhouse::Client, sql: &str) -> Vec<Vec<Value>> {
    let text = netmeter_tests::clickhouse::query_text(client, sql, "JSONCompactEachRow").await;
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn table<'a>(report: &'a Report, section: &str, id: &str) -> &'a Table {
    report
        .table(section, id)
        .unwrap_or_else(|| panic!("no table {section}/{id}"))
}

/// Rows as maps keyed by their first `keys` values.
fn keyed(rows: &[Vec<Value>], keys: usize) -> BTreeMap<Vec<String>, Vec<Value>> {
    rows.iter()
        .map(|r| {
            let key = r[..keys]
                .iter()
                .map(|v| v.as_str().map(str::to_string).unwrap_or(v.to_string()))
                .collect();
            (key, r[keys..].to_vec())
        })
        .collect()
}

fn range_sql(range: TimeRange) -> String {
    format!(
        "interval_start >= '{}' AND interval_start < '{}'",
        format_time(range.from),
        format_time(range.to)
    )
}

const LOCAL: &str = "if(local_workload_name != '', concat(local_namespace, '/', local_workload_name), concat('node ', local_node))";
const REMOTE: &str = "if(remote_workload_name != '', concat(remote_namespace, '/', remote_workload_name), concat('node ', remote_node))";

async fn report(setup: &Setup, options: &Options) -> Report {
    build(&setup.connection, options)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_figure_equals_sql_on_flows_final() {
    let setup = setup().await;
    let range = setup.range;
    let report = report(&setup, &Options::new(range)).await;
    let client = &setup.client;
    let current = range_sql(range);
    let both = range_sql(TimeRange {
        from: range.previous().from,
        to: range.to,
    });
    let from = format_time(range.from);

    // Bytes and dollars by class: a connection within a node has one record per direction,
    // which is both what one endpoint sent and what the other received.
    let expected = sql(
        client,
        &format!(
            "SELECT class,
                sumIf(bytes, interval_start >= '{from}' AND (direction = 'out' OR class = 'INTRA_NODE')),
                sumIf(bytes, interval_start >= '{from}' AND (direction = 'in' OR class = 'INTRA_NODE')),
                sumIf(cost_usd, interval_start >= '{from}'),
                sumIf(bytes, interval_start < '{from}' AND (direction = 'out' OR class = 'INTRA_NODE')),
                sumIf(bytes, interval_start < '{from}' AND (direction = 'in' OR class = 'INTRA_NODE')),
                sumIf(cost_usd, interval_start < '{from}')
             FROM netmeter.flows FINAL WHERE {both} GROUP BY class"
        ),
    )
    .await;
    let by_class = table(&report, "overview", "by_class");
    assert_eq!(keyed(&by_class.rows, 1), keyed(&expected, 1));
    assert_eq!(by_class.rows.len(), 6, "{:?}", by_class.rows);

    // Over time: every record's bytes (twice within a node) and dollars, per minute.
    let expected = sql(
        client,
        &format!(
            "SELECT toString(toStartOfInterval(toDateTime(interval_start, 'UTC'), INTERVAL 60 SECOND)),
                class, sum(bytes) * if(class = 'INTRA_NODE', 2, 1), sum(cost_usd)
             FROM netmeter.flows FINAL WHERE {current} GROUP BY 1, class ORDER BY 1, class"
        ),
    )
    .await;
    assert_eq!(report.bucket, 60);
    assert_eq!(table(&report, "overview", "cost_over_time").rows, expected);

    // The sankey holds every sent byte once; api-1's answers to web within node-a are api's.
    let sankey = table(&report, "overview", "sankey");
    let sent = sql(
        client,
        &format!(
            "SELECT sum(bytes) FROM netmeter.flows FINAL
             WHERE {current} AND (direction = 'out' OR class = 'INTRA_NODE')"
        ),
    )
    .await;
    let total: u64 = sankey.rows.iter().map(|r| r[3].as_u64().unwrap()).sum();
    assert_eq!(json!(total), sent[0][0]);
    let within_node = sql(
        client,
        &format!(
            "SELECT sum(bytes) FROM netmeter.flows FINAL
             WHERE {current} AND class = 'INTRA_NODE' AND direction = 'in'
               AND local_workload_name = 'web' AND remote_workload_name = 'api'"
        ),
    )
    .await;
    assert!(
        sankey.rows.contains(&vec![
            json!("shop/api"),
            json!("INTRA_NODE"),
            json!("shop/web"),
            within_node[0][0].clone()
        ]),
        "{:?}",
        sankey.rows
    );

    // Zone to zone.
    let expected = sql(
        client,
        &format!(
            "SELECT local_zone, remote_zone,
                sumIf(bytes, direction = 'out') + sumIf(bytes, class = 'INTRA_NODE' AND direction = 'in')
             FROM netmeter.flows FINAL WHERE {current} AND remote_zone != ''
             GROUP BY local_zone, remote_zone ORDER BY local_zone, remote_zone"
        ),
    )
    .await;
    assert_eq!(table(&report, "cross_zone", "zone_matrix").rows, expected);

    // The pairs across zones, most expensive first.
    let expected = sql(
        client,
        &format!(
            "SELECT {LOCAL}, local_zone, {REMOTE}, remote_zone, class,
                sumIf(bytes, direction = 'out') AS sent, sumIf(bytes, direction = 'in') AS received,
                sum(cost_usd) AS cost
             FROM netmeter.flows FINAL
             WHERE {current} AND class IN ('INTER_ZONE', 'INTER_REGION', 'INTER_CLOUD')
               AND remote_workload_name != ''
             GROUP BY ALL ORDER BY cost DESC, sent + received DESC, 1, 2, 3, 4, 5"
        ),
    )
    .await;
    assert_eq!(table(&report, "cross_zone", "top_pairs").rows, expected);
    assert_eq!(
        expected.len(),
        4,
        "web<->api and web<->log-sink, each from both sides"
    );

    // Cloud services and the internet.
    let expected = sql(
        client,
        &format!(
            "SELECT {LOCAL},
                multiIf(remote_service != '', concat(remote_service, ' (', remote_region, ')'),
                        class = 'INTERNET', 'internet',
                        concat(remote_cloud, ' ', remote_region)),
                class, sumIf(bytes, direction = 'out') AS sent, sumIf(bytes, direction = 'in') AS received,
                sum(cost_usd) AS cost
             FROM netmeter.flows FINAL
             WHERE {current} AND (remote_service != '' OR class IN ('INTERNET', 'INTER_CLOUD'))
             GROUP BY ALL ORDER BY cost DESC, sent + received DESC, 1, 2, 3"
        ),
    )
    .await;
    assert_eq!(table(&report, "egress", "destinations").rows, expected);

    // Who opens connections: a workload's own records, plus, within a node, the connections
    // it accepted and the bytes it exchanged as the other endpoint of the source's records.
    let own = sql(
        client,
        &format!(
            "SELECT {LOCAL},
                uniqExactIf((protocol, local_ip, local_port, remote_ip, remote_port), local_initiated),
                uniqExactIf((protocol, local_ip, local_port, remote_ip, remote_port), NOT local_initiated),
                sumIf(bytes, direction = 'out'), sumIf(bytes, direction = 'in')
             FROM netmeter.flows FINAL WHERE {current} GROUP BY 1"
        ),
    )
    .await;
    let other_side = sql(
        client,
        &format!(
            "SELECT {REMOTE}, uniqExact((protocol, local_ip, local_port, remote_ip, remote_port)),
                sumIf(bytes, direction = 'in'), sumIf(bytes, direction = 'out')
             FROM netmeter.flows FINAL WHERE {current} AND class = 'INTRA_NODE' GROUP BY 1"
        ),
    )
    .await;
    let mut expected: BTreeMap<String, [u64; 4]> = BTreeMap::new();
    for row in &own {
        let e = expected.entry(row[0].as_str().unwrap().into()).or_default();
        for i in 0..4 {
            e[i] += row[i + 1].as_u64().unwrap();
        }
    }
    for row in &other_side {
        let e = expected.entry(row[0].as_str().unwrap().into()).or_default();
        e[1] += row[1].as_u64().unwrap();
        e[2] += row[2].as_u64().unwrap();
        e[3] += row[3].as_u64().unwrap();
    }
    let initiators = table(&report, "initiators", "workloads");
    let got: BTreeMap<String, [u64; 4]> = initiators
        .rows
        .iter()
        .map(|r| {
            (
                r[0].as_str().unwrap().to_string(),
                [2, 3, 4, 5].map(|i| r[i].as_u64().unwrap()),
            )
        })
        .collect();
    assert_eq!(got, expected);
    let role = |workload: &str| {
        initiators
            .rows
            .iter()
            .find(|r| r[0] == json!(workload))
            .map(|r| r[1].clone())
    };
    assert_eq!(role("obs/log-sink"), Some(json!("only receives")));
    assert_eq!(role("node node-c"), Some(json!("opens")));
    assert_eq!(role("shop/web"), Some(json!("both")));
    assert_eq!(role("shop/api"), Some(json!("both")));

    // Balance: web's connections to each api pod, from web's own records.
    let expected = sql(
        client,
        &format!(
            "SELECT 'shop/web', 'shop/api', remote_pod,
                uniqExact((protocol, local_ip, local_port, remote_ip, remote_port)) AS connections,
                sum(bytes)
             FROM netmeter.flows FINAL
             WHERE {current} AND local_initiated AND local_workload_name = 'web'
               AND remote_workload_name = 'api'
             GROUP BY remote_pod ORDER BY connections DESC"
        ),
    )
    .await;
    assert_eq!(table(&report, "balance", "backends").rows, expected);
    let connections: Vec<u64> = expected.iter().map(|r| r[3].as_u64().unwrap()).collect();
    assert_eq!(connections, [6, 3, 1]);
    assert_eq!(
        table(&report, "balance", "imbalance").rows,
        vec![vec![
            json!("shop/web"),
            json!("shop/api"),
            json!(3),
            json!(10),
            json!(6),
            json!(1),
            json!(1.8),
            json!(1.8),
            json!(3)
        ]]
    );

    // Throughput: per node and interval, without traffic within the node.
    let intervals = sql(
        client,
        &format!(
            "SELECT local_node, any(local_instance_type),
                sumIf(bytes, direction = 'out') * 8 / interval_seconds,
                sumIf(bytes, direction = 'in') * 8 / interval_seconds
             FROM netmeter.flows FINAL WHERE {current} AND class != 'INTRA_NODE'
             GROUP BY local_node, interval_start, interval_seconds"
        ),
    )
    .await;
    let bandwidth = BandwidthTable::builtin();
    let nodes = table(&report, "throughput", "nodes");
    assert_eq!(nodes.rows.len(), 3);
    for node in ["node-a", "node-b", "node-c"] {
        let mine: Vec<&Vec<Value>> = intervals.iter().filter(|r| r[0] == json!(node)).collect();
        let series = |i: usize| {
            let mut v: Vec<f64> = mine.iter().map(|r| r[i].as_f64().unwrap()).collect();
            v.sort_by(f64::total_cmp);
            // quantileExact(0.99): the element at floor(0.99 n) of the sorted values.
            let p99 = v[((0.99 * v.len() as f64) as usize).min(v.len() - 1)];
            (*v.last().unwrap(), p99)
        };
        let ((peak_out, p99_out), (peak_in, p99_in)) = (series(2), series(3));
        let row = nodes.rows.iter().find(|r| r[0] == json!(node)).unwrap();
        assert_eq!(
            [3, 4, 5, 6].map(|i| row[i].as_f64().unwrap()),
            [peak_out, p99_out, peak_in, p99_in],
            "{node}"
        );
        let kind = mine[0][1].as_str().unwrap();
        assert_eq!(row[1], json!(kind));
        let status = match bandwidth.lookup(kind) {
            Some(b) => {
                assert_eq!(row[2], json!(b.baseline_bps));
                let peak = limited(b.limits, peak_out, peak_in);
                assert_eq!(row[7], json!(peak / b.baseline_bps));
                NodeStatus::judge(peak, limited(b.limits, p99_out, p99_in), b)
            }
            None => NodeStatus::UnknownInstanceType,
        };
        assert_eq!(row[8], json!(status.label()), "{node}");
    }
    let statuses: Vec<&Value> = nodes.rows.iter().map(|r| &r[8]).collect();
    assert_eq!(
        statuses,
        [
            &json!("at risk"),
            &json!("ok"),
            &json!("unknown instance type")
        ],
        "node-b's 5 GiB minute is 92% of an m6i.large's 781 Mbit/s baseline"
    );
    let over_time = table(&report, "throughput", "node_over_time");
    let peak_b = over_time
        .rows
        .iter()
        .filter(|r| r[1] == json!("node-b"))
        .map(|r| r[2].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert_eq!(json!(peak_b), nodes.rows[0][3]);

    // Cost per namespace and day, per workload and day, and the change.
    let expected = sql(
        client,
        &format!(
            "SELECT toString(toStartOfDay(toDateTime(interval_start, 'UTC'))),
                if(local_namespace != '', local_namespace, '(nodes)'), sum(cost_usd) AS cost
             FROM netmeter.flows FINAL WHERE {current} GROUP BY 1, 2 HAVING cost != 0"
        ),
    )
    .await;
    assert_eq!(
        keyed(&table(&report, "cost_by_day", "namespaces").rows, 2),
        keyed(&expected, 2)
    );
    let expected = sql(
        client,
        &format!(
            "SELECT toString(toStartOfDay(toDateTime(interval_start, 'UTC'))),
                if(local_namespace != '', local_namespace, '(nodes)'), {LOCAL}, sum(cost_usd) AS cost
             FROM netmeter.flows FINAL WHERE {current} GROUP BY 1, 2, 3 HAVING cost != 0"
        ),
    )
    .await;
    assert_eq!(
        keyed(&table(&report, "cost_by_day", "workloads").rows, 3),
        keyed(&expected, 3)
    );
    let expected = sql(
        client,
        &format!(
            "SELECT if(local_namespace != '', local_namespace, '(nodes)'), {LOCAL},
                sumIf(cost_usd, interval_start >= '{from}') AS now,
                sumIf(cost_usd, interval_start < '{from}') AS before,
                now - before,
                if(before = 0, NULL, round((now - before) / before, 4))
             FROM netmeter.flows FINAL WHERE {both} GROUP BY 1, 2 HAVING now != 0 OR before != 0"
        ),
    )
    .await;
    assert_eq!(
        keyed(&table(&report, "cost_by_day", "change").rows, 2),
        keyed(&expected, 2)
    );

    // FINAL: the replayed internet record counts once, as web's, not node-a's.
    let internet = |final_: &str| {
        format!(
            "SELECT sumIf(bytes, direction = 'out') FROM netmeter.flows {final_}
             WHERE {current} AND class = 'INTERNET' AND cluster = 'prod'"
        )
    };
    let with_final = sql(client, &internet("FINAL")).await[0][0].clone();
    let without = sql(client, &internet("")).await[0][0].clone();
    assert!(
        without.as_u64() > with_final.as_u64(),
        "the fixture has a duplicate"
    );
    let destinations = table(&report, "egress", "destinations");
    assert!(
        destinations
            .rows
            .iter()
            .all(|r| r[0] != json!("node node-a")),
        "the first attribution is replaced: {:?}",
        destinations.rows
    );
}

/// Internet egress (INTERNET and INTER_CLOUD records, `out`) of `range`, as `flows` says it.
const EGRESS: &str = "class IN ('INTERNET', 'INTER_CLOUD')";
const PLACE: &str = "if(remote_country != '', remote_country, 'unknown')";

/// Countries: bytes sent, dollars, distinct senders, and whether nothing was sent there in the
/// previous period; largest first.
async fn expected_countries(setup: &Setup) -> Vec<Vec<Value>> {
    let range = setup.range;
    sql(
        &setup.client,
        &format!(
            "SELECT {PLACE} AS place,
                sumIf(bytes, direction = 'out') AS sent,
                sum(cost_usd),
                uniqExactIf({LOCAL}, direction = 'out'),
                toBool(place NOT IN (
                    SELECT {PLACE} FROM netmeter.flows FINAL
                    WHERE {previous} AND {EGRESS} AND direction = 'out' AND bytes > 0))
             FROM netmeter.flows FINAL
             WHERE {current} AND {EGRESS}
             GROUP BY place HAVING sent > 0
             ORDER BY sent DESC, place",
            current = range_sql(range),
            previous = range_sql(range.previous()),
        ),
    )
    .await
}

/// (workload, country, network) sent to: bytes both ways, dollars, the processing part, and
/// whether the workload sent nothing there in the previous period; largest first.
async fn expected_destinations(setup: &Setup) -> Vec<Vec<Value>> {
    let range = setup.range;
    sql(
        &setup.client,
        &format!(
            "SELECT {LOCAL} AS workload, {PLACE} AS place, remote_asn, max(remote_as_name),
                sumIf(bytes, direction = 'out') AS sent,
                sumIf(bytes, direction = 'in'),
                sum(cost_usd),
                sum(processing_cost_usd),
                toBool((workload, place, remote_asn) NOT IN (
                    SELECT {LOCAL}, {PLACE}, remote_asn FROM netmeter.flows FINAL
                    WHERE {previous} AND {EGRESS} AND direction = 'out' AND bytes > 0))
             FROM netmeter.flows FINAL
             WHERE {current} AND {EGRESS}
             GROUP BY workload, place, remote_asn HAVING sent > 0
             ORDER BY sent DESC, workload, place, remote_asn",
            current = range_sql(range),
            previous = range_sql(range.previous()),
        ),
    )
    .await
}

/// The first `keys` values of each row that is flagged new (its last value).
fn flagged_new(rows: &[Vec<Value>], keys: usize) -> Vec<Vec<Value>> {
    rows.iter()
        .filter(|r| r.last() == Some(&json!(true)))
        .map(|r| r[..keys].to_vec())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internet_egress_by_country_and_network_equals_sql_on_flows_final() {
    let setup = setup().await;
    let report = report(&setup, &Options::new(setup.range)).await;
    let section = report
        .sections
        .iter()
        .position(|s| s.id == "egress_destinations")
        .expect("the section");
    assert_eq!(report.sections[section - 1].id, "egress", "after egress");

    let countries = table(&report, "egress_destinations", "countries");
    let expected = expected_countries(&setup).await;
    assert_eq!(countries.rows, expected);
    let places: Vec<&Value> = countries.rows.iter().map(|r| &r[0]).collect();
    // CN had egress in the previous period only; S3 in us-east-1 is another region, not egress.
    assert_eq!(
        places,
        [&json!("DE"), &json!("unknown"), &json!("US"), &json!("JP")]
    );
    assert_eq!(flagged_new(&countries.rows, 1), [vec![json!("JP")]]);
    // DE: web in both clusters (one name) and api; US: web and node-c's kubelet.
    let workloads: Vec<&Value> = countries.rows.iter().map(|r| &r[3]).collect();
    assert_eq!(workloads, [&json!(2), &json!(1), &json!(2), &json!(1)]);

    let destinations = table(&report, "egress_destinations", "destinations");
    let expected = expected_destinations(&setup).await;
    assert_eq!(destinations.rows, expected);
    assert_eq!(destinations.rows.len(), 6, "{:?}", destinations.rows);
    // New: web answering a new client, api reaching a network web already used, api's first
    // packets to Japan. Not new: what was sent in both periods.
    assert_eq!(
        flagged_new(&destinations.rows, 3),
        [
            vec![json!("shop/web"), json!("US"), json!(7922)],
            vec![json!("shop/api"), json!("DE"), json!(24940)],
            vec![json!("shop/api"), json!("JP"), json!(2497)],
        ]
    );
    assert!(
        destinations.rows.contains(&vec![
            json!("shop/api"),
            json!("unknown"),
            json!(0),
            json!(""),
            json!(24 * (8 << 20)),
            json!(24 << 20),
            json!((24 * (8u64 << 20)) as f64 / (1u64 << 34) as f64),
            json!(0),
            json!(false),
        ]),
        "an address without location: {:?}",
        destinations.rows
    );
    // The NAT gateway's processing charge is part of the cost, both ways.
    let processing: Vec<(Value, f64)> = destinations
        .rows
        .iter()
        .filter(|r| r[7].as_f64() != Some(0.0))
        .map(|r| (r[1].clone(), r[7].as_f64().unwrap()))
        .collect();
    let both_ways =
        |sent: u64, received: u64| (24 * (sent + received)) as f64 / (1u64 << 36) as f64;
    assert_eq!(
        processing,
        [
            (json!("DE"), both_ways(2 << 20, 256 << 10)),
            (json!("JP"), both_ways(256 << 10, 64 << 10)),
        ]
    );

    // Internet egress is the INTERNET and INTER_CLOUD bytes the overview counts as sent.
    let by_class = table(&report, "overview", "by_class");
    let sent_by_class: u64 = by_class
        .rows
        .iter()
        .filter(|r| r[0] == json!("INTERNET") || r[0] == json!("INTER_CLOUD"))
        .map(|r| r[1].as_u64().unwrap())
        .sum();
    for t in [countries, destinations] {
        let i = t.index("sent_bytes").unwrap();
        let sent: u64 = t.rows.iter().map(|r| r[i].as_u64().unwrap()).sum();
        assert_eq!(sent, sent_by_class, "{}", t.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_destination_is_flagged_and_never_cut_by_the_top_limit() {
    let setup = setup().await;
    let range = setup.range;
    let top = |n: usize| Options {
        top: n,
        ..Options::new(range)
    };
    let all = expected_destinations(&setup).await;
    let is_new = |r: &Vec<Value>| r[8] == json!(true);
    // api's destination in Japan is new and the smallest: a plain top 4 by bytes would cut it.
    let smallest = all.last().unwrap();
    assert_eq!(smallest[..3], [json!("shop/api"), json!("JP"), json!(2497)]);
    assert!(is_new(smallest));
    assert_eq!(all.iter().filter(|r| is_new(r)).count(), 3);

    // Top 4: the 3 new destinations and the largest other one, by bytes; the rest in `other`.
    let report4 = report(&setup, &top(4)).await;
    let rows = &table(&report4, "egress_destinations", "destinations").rows;
    let (kept, cut): (Vec<&Vec<Value>>, Vec<&Vec<Value>>) = all
        .iter()
        .partition(|r| is_new(r) || std::ptr::eq(*r, &all[0]));
    assert_eq!(rows.len(), 5, "{rows:?}");
    assert_eq!(rows[..4].iter().collect::<Vec<_>>(), kept);
    let sum = |rows: &[&Vec<Value>], i: usize| -> f64 {
        rows.iter().map(|r| r[i].as_f64().unwrap()).sum()
    };
    let other = &rows[4];
    assert_eq!(
        other[..4],
        [json!("other"), json!(""), Value::Null, json!("")]
    );
    // Bytes both ways and both dollar columns.
    for (i, value) in other.iter().enumerate().take(8).skip(4) {
        assert_eq!(value.as_f64().unwrap(), sum(&cut, i), "column {i}");
    }
    assert_eq!(other[8], json!(false), "no new destination in other");

    // Top 2: more new destinations than rows; the 2 largest new ones, `other` holds the third.
    let report2 = report(&setup, &top(2)).await;
    let rows = &table(&report2, "egress_destinations", "destinations").rows;
    let new_rows: Vec<&Vec<Value>> = all.iter().filter(|r| is_new(r)).collect();
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(rows[..2].iter().collect::<Vec<_>>(), new_rows[..2]);
    assert_eq!(rows[2][0], json!("other"));
    assert_eq!(rows[2][8], json!(true), "other holds a new destination");

    // Countries are a plain top list: the 2 largest, then `other` (US and JP) with its senders
    // counted once and the new country in it.
    let countries = expected_countries(&setup).await;
    let rows = &table(&report2, "egress_destinations", "countries").rows;
    assert_eq!(rows[..2], countries[..2]);
    let rest: Vec<&Vec<Value>> = countries[2..].iter().collect();
    assert_eq!(
        rows[2],
        [
            json!("other"),
            json!(sum(&rest, 1) as u64),
            json!(sum(&rest, 2)),
            json!(3),
            json!(true)
        ],
        "shop/web and node node-c to the US, shop/api to Japan"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollups_and_flows_give_the_same_report() {
    let setup = setup().await;
    let range = setup.range;
    let unaligned = TimeRange {
        from: range.from + 7 * 60,
        to: range.to - 13 * 60,
    };
    for range in [range, unaligned] {
        let flows_only = report(
            &setup,
            &Options {
                rollups: false,
                ..Options::new(range)
            },
        )
        .await;
        // The refresh views also run on their own every minute, and a refresh makes the buckets
        // it rewrote pending for the next level for a moment: refresh, then read at once.
        let mut with_rollups = None;
        for _ in 0..5 {
            fixture::refresh(&setup.client).await;
            let report = report(&setup, &Options::new(range)).await;
            let sql = &table(&report, "overview", "by_class").sql;
            if sql.contains("flows_per_hour") && !sql.contains(".flows FINAL") {
                with_rollups = Some(report);
                break;
            }
        }
        let with_rollups = with_rollups.expect("the rollups answer a complete range");
        let by_class = &table(&with_rollups, "overview", "by_class").sql;
        if range == unaligned {
            assert!(by_class.contains("flows_per_minute"), "{by_class}");
        }
        for (a, b) in with_rollups.sections.iter().zip(&flows_only.sections) {
            for (x, y) in a.tables.iter().zip(&b.tables) {
                assert_eq!(x.rows, y.rows, "{}/{} over {range:?}", a.id, x.id);
                let reads_rollups = x.sql.contains("flows_per_");
                assert!(!y.sql.contains("flows_per_"), "{}", y.sql);
                if ["by_class", "zone_matrix", "namespaces", "namespace_change"].contains(&x.id) {
                    assert!(reads_rollups, "{}/{} reads flows: {}", a.id, x.id, x.sql);
                }
            }
        }
    }
}

/// The numeric columns of a table added up.
fn sums(table: &Table) -> Vec<f64> {
    table
        .columns
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            matches!(
                c.kind,
                netmeter_report::model::Kind::Bytes
                    | netmeter_report::model::Kind::Usd
                    | netmeter_report::model::Kind::Count
            )
        })
        .map(|(i, _)| {
            table
                .rows
                .iter()
                .map(|r| r[i].as_f64().unwrap_or(0.0))
                .sum()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_top_list_and_its_other_row_add_up_to_the_whole() {
    let setup = setup().await;
    let all = report(
        &setup,
        &Options {
            top: 100,
            ..Options::new(setup.range)
        },
    )
    .await;
    let top = report(
        &setup,
        &Options {
            top: 2,
            ..Options::new(setup.range)
        },
    )
    .await;
    let lists = [
        ("overview", "sankey"),
        ("cross_zone", "top_pairs"),
        ("egress", "destinations"),
        ("initiators", "workloads"),
        ("cost_by_day", "workloads"),
        ("cost_by_day", "change"),
    ];
    for (section, id) in lists {
        let (whole, cut) = (table(&all, section, id), table(&top, section, id));
        assert_eq!(sums(whole), sums(cut), "{section}/{id}");
        assert!(
            whole.rows.len() > 2,
            "{section}/{id}: the fixture has more than 2 rows"
        );
        let others = cut
            .rows
            .iter()
            .filter(|r| r.contains(&json!("other")))
            .count();
        assert!(others >= 1, "{section}/{id}: {:?}", cut.rows);
        if id != "sankey" {
            let last = cut.rows.last().unwrap();
            assert!(
                last.contains(&json!("other")),
                "{section}/{id}: other is last"
            );
            assert_eq!(cut.rows.len(), 3, "{section}/{id}: 2 rows and other");
            assert_eq!(&cut.rows[..2], &whole.rows[..2], "{section}/{id}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_narrow_to_what_they_name() {
    let setup = setup().await;
    let range = setup.range;
    let current = range_sql(range);
    let with = |filters: Filters| Options {
        filters,
        ..Options::new(range)
    };
    // A namespace: its endpoints' own records, and their side of connections within a node.
    let obs = report(
        &setup,
        &with(Filters {
            namespace: Some("obs".into()),
            ..Filters::default()
        }),
    )
    .await;
    let expected = sql(
        &setup.client,
        &format!(
            "SELECT sumIf(bytes, local_namespace = 'obs' AND direction = 'out')
                  + sumIf(bytes, class = 'INTRA_NODE' AND remote_namespace = 'obs' AND direction = 'in'),
                sumIf(bytes, local_namespace = 'obs' AND direction = 'in')
                  + sumIf(bytes, class = 'INTRA_NODE' AND remote_namespace = 'obs' AND direction = 'out')
             FROM netmeter.flows FINAL WHERE {current}"
        ),
    )
    .await;
    let by_class = table(&obs, "overview", "by_class");
    let sent: u64 = by_class.rows.iter().map(|r| r[1].as_u64().unwrap()).sum();
    let received: u64 = by_class.rows.iter().map(|r| r[2].as_u64().unwrap()).sum();
    assert_eq!(vec![json!(sent), json!(received)], expected[0]);
    let workloads: Vec<&Value> = table(&obs, "initiators", "workloads")
        .rows
        .iter()
        .map(|r| &r[0])
        .collect();
    assert_eq!(workloads, [&json!("obs/log-sink")]);

    // A cluster.
    let staging = report(
        &setup,
        &with(Filters {
            cluster: Some("staging".into()),
            ..Filters::default()
        }),
    )
    .await;
    let rows = &table(&staging, "overview", "by_class").rows;
    assert_eq!(rows.len(), 1);
    // 24 intervals of 1 MiB each way.
    assert_eq!(
        rows[0][..3],
        [json!("INTERNET"), json!(24 << 20), json!(24 << 20)]
    );

    // A workload and a class.
    let web = report(
        &setup,
        &with(Filters {
            workload: Some("shop/web".into()),
            class: Some("INTER_ZONE".into()),
            ..Filters::default()
        }),
    )
    .await;
    let classes: Vec<&Value> = table(&web, "overview", "by_class")
        .rows
        .iter()
        .map(|r| &r[0])
        .collect();
    assert_eq!(classes, [&json!("INTER_ZONE")]);
    let pairs = &table(&web, "cross_zone", "top_pairs").rows;
    assert!(pairs.iter().all(|r| r[0] == json!("shop/web")), "{pairs:?}");
    assert_eq!(pairs.len(), 2);

    // Where egress goes, and what is new, within the filters: in namespace shop nobody sent to
    // the US before (only node-c's kubelet did, which is no namespace's).
    let shop = report(
        &setup,
        &with(Filters {
            namespace: Some("shop".into()),
            ..Filters::default()
        }),
    )
    .await;
    let countries = &table(&shop, "egress_destinations", "countries").rows;
    let us = countries.iter().find(|r| r[0] == json!("US")).unwrap();
    assert_eq!((&us[3], &us[4]), (&json!(1), &json!(true)), "{us:?}");
    let senders = &table(&shop, "egress_destinations", "destinations").rows;
    assert!(
        senders
            .iter()
            .all(|r| r[0].as_str().unwrap().starts_with("shop/")),
        "{senders:?}"
    );
    let staging_countries = &table(&staging, "egress_destinations", "countries").rows;
    assert_eq!(
        staging_countries,
        &vec![vec![
            json!("DE"),
            json!(24 << 20),
            json!((24u64 << 20) as f64 / (1u64 << 34) as f64),
            json!(1),
            json!(false)
        ]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_csv_and_terminal_show_the_same_values() {
    let setup = setup().await;
    let report = report(&setup, &Options::new(setup.range)).await;

    let json_text = render::json(&report);
    let parsed: Value = serde_json::from_str(&json_text).unwrap();
    assert_eq!(parsed, serde_json::to_value(&report).unwrap());
    assert_eq!(
        parsed["sections"][0]["tables"][0]["columns"][1]["kind"],
        "bytes"
    );

    let csv = render::csv(&report);
    let blocks: Vec<&str> = csv.split("\n\n").collect();
    let tables: Vec<(&str, &Table)> = report
        .sections
        .iter()
        .flat_map(|s| s.tables.iter().map(move |t| (s.id, t)))
        .collect();
    assert_eq!(blocks.len(), tables.len());
    for (block, (section, table)) in blocks.iter().zip(&tables) {
        let mut lines = block.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        let names: Vec<&str> = table.columns.iter().map(|c| c.name).collect();
        assert_eq!(header[..2], ["section", "table"]);
        assert_eq!(header[2..], names[..]);
        let rows: Vec<&str> = lines.collect();
        assert_eq!(rows.len(), table.rows.len(), "{section}/{}", table.id);
        for (line, row) in rows.iter().zip(&table.rows) {
            // No value of the fixture holds a comma or a quote.
            let fields: Vec<&str> = line.split(',').collect();
            assert_eq!(fields[..2], [*section, table.id]);
            for (field, value) in fields[2..].iter().zip(row) {
                let expected = match value {
                    Value::Null => String::new(),
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                assert_eq!(*field, expected);
                if let (Ok(number), Some(v)) = (field.parse::<f64>(), value.as_f64()) {
                    assert_eq!(number, v, "{field} reads back exactly");
                }
            }
        }
    }

    let style = render::TerminalStyle {
        width: 200,
        sql: true,
    };
    let text = render::terminal(&report, &style);
    for (_, table) in &tables {
        let indented: String = table.sql.lines().map(|l| format!("    {l}\n")).collect();
        assert!(
            text.contains(&indented),
            "{}: the SQL follows the table",
            table.id
        );
        if table.id == "cost_over_time" || table.id == "node_over_time" {
            continue;
        }
        for row in &table.rows {
            let shown: Vec<String> = row
                .iter()
                .zip(&table.columns)
                .map(|(v, c)| render::cell(v, c).trim_end_matches(" 00:00:00").to_string())
                .collect();
            let found = text.lines().any(|line| {
                let mut rest = line;
                shown.iter().all(|cell| match rest.find(cell.as_str()) {
                    Some(at) => {
                        rest = &rest[at + cell.len()..];
                        true
                    }
                    None => false,
                })
            });
            assert!(found, "{}: no line shows {shown:?}", table.id);
        }
    }
    let narrow = render::terminal(
        &report,
        &render::TerminalStyle {
            width: 100,
            sql: false,
        },
    );
    assert!(!narrow.contains("SELECT"));
    for title in [
        "Bytes and dollars by class",
        "Workload pairs across zones and regions",
    ] {
        let block = narrow
            .split(title)
            .nth(1)
            .unwrap()
            .split("\n\n")
            .next()
            .unwrap();
        for line in block.lines() {
            assert!(
                line.chars().count() <= 100,
                "wider than 100 columns: {line}"
            );
        }
    }
}
