//! End to end, for people: the mini-cluster's traffic matrix runs through real kernel conntrack
//! and the whole pipeline, ClickHouse is first proven to hold exactly what the kernel counted,
//! then the real Prometheus, scraping every service every second, answers the questions of the
//! attributors' usage metrics with the same numbers as ClickHouse: cross-zone bytes and dollars
//! per workload and direction, and bytes per zone pair. Every service's `/metrics` passes
//! Prometheus's linter (`promtool check metrics`). Needs root.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use netmeter_tests::ledger;
use netmeter_tests::pipeline::{self, Metered};
use netmeter_tests::prometheus::{self, Prometheus, ScrapeJob};
use netmeter_tests::service::RunningService;

const CLUSTER: &str = "prometheus";
/// How long Prometheus may take to show what ClickHouse holds (it scrapes every second).
const AGREE_TIMEOUT: Duration = Duration::from_secs(30);

/// One grouping's rows: (three group labels) -> value.
type Table = BTreeMap<(String, String, String), f64>;

/// A question asked of both: the PromQL over the attributors' metrics, and the SQL over `flows`
/// that must give the same rows (three group columns, then the value).
struct Question {
    what: &'static str,
    promql: &'static str,
    labels: [&'static str; 3],
    sql: String,
    /// Bytes must be equal; dollars are sums of floats in another order.
    relative_tolerance: f64,
}

fn questions() -> Vec<Question> {
    // The attributor's label mapping (services/attributor/src/usage): a local endpoint without
    // a workload is `__node__` (namespace "") when it is a node's own address, else `__none__`.
    let namespace = "if(local_workload_name = '' AND local_host_network, '', local_namespace)";
    let workload = "multiIf(local_workload_name != '', local_workload_name, local_host_network, '__node__', '__none__')";
    let cross_zone = |value: &str| {
        format!(
            "SELECT {namespace}, {workload}, direction, {value} FROM {db}.flows FINAL \
             WHERE cluster = '{CLUSTER}' AND class = 'INTER_ZONE' GROUP BY ALL ORDER BY ALL",
            db = pipeline::DATABASE
        )
    };
    vec![
        Question {
            what: "cross-zone bytes per workload",
            promql: "sum by (namespace, workload, direction) (netmeter_workload_bytes_total{class=\"INTER_ZONE\"})",
            labels: ["namespace", "workload", "direction"],
            sql: cross_zone("sum(bytes)"),
            relative_tolerance: 0.0,
        },
        Question {
            what: "cross-zone dollars per workload",
            promql: "sum by (namespace, workload, direction) (netmeter_workload_cost_dollars_total{class=\"INTER_ZONE\"})",
            labels: ["namespace", "workload", "direction"],
            sql: cross_zone("sum(cost_usd)"),
            relative_tolerance: 1e-9,
        },
        Question {
            what: "bytes per zone pair",
            promql: "sum by (zone, remote_zone, direction) (netmeter_zone_pair_bytes_total)",
            labels: ["zone", "remote_zone", "direction"],
            sql: format!(
                "SELECT if(local_zone = '', 'none', local_zone), if(remote_zone = '', 'none', remote_zone), \
                 direction, sum(bytes) FROM {db}.flows FINAL WHERE cluster = '{CLUSTER}' \
                 GROUP BY ALL ORDER BY ALL",
                db = pipeline::DATABASE
            ),
            relative_tolerance: 0.0,
        },
        Question {
            what: "internet egress bytes per country",
            // One label: the other two columns of the shape are empty on both sides.
            promql: "sum by (country) (netmeter_internet_egress_bytes_total)",
            labels: ["country", "job", "instance"],
            sql: format!(
                "SELECT if(remote_country = '', 'unknown', remote_country), '', '', \
                 sum(bytes) FROM {db}.flows FINAL WHERE cluster = '{CLUSTER}' \
                 AND class IN ('INTERNET', 'INTER_CLOUD') AND direction = 'out' \
                 GROUP BY ALL ORDER BY ALL",
                db = pipeline::DATABASE
            ),
            relative_tolerance: 0.0,
        },
    ]
}

async fn from_clickhouse(client: &clickhouse::Client, sql: &str) -> Table {
    let text = netmeter_tests::clickhouse::query_text(client, sql, "TabSeparated").await;
    text.lines()
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            let [a, b, c, value] = f[..] else {
                panic!("unexpected row {line:?} of {sql}");
            };
            (
                (a.into(), b.into(), c.into()),
                value.parse().unwrap_or_else(|e| panic!("{value:?}: {e}")),
            )
        })
        .collect()
}

fn from_prometheus(prometheus: &Prometheus, question: &Question) -> Table {
    let label = |labels: &prometheus::Labels, name| labels.get(name).cloned().unwrap_or_default();
    prometheus
        .query(question.promql)
        .unwrap_or_else(|e| panic!("{e:#}"))
        .into_iter()
        .map(|(labels, value)| {
            let [a, b, c] = question.labels;
            (
                (label(&labels, a), label(&labels, b), label(&labels, c)),
                value,
            )
        })
        .collect()
}

/// The rows that differ, or `None`.
fn difference(question: &Question, stored: &Table, scraped: &Table) -> Option<String> {
    let keys: std::collections::BTreeSet<_> = stored.keys().chain(scraped.keys()).collect();
    let mut out = String::new();
    for key in keys {
        let (s, p) = (stored.get(key), scraped.get(key));
        let same = match (s, p) {
            (Some(s), Some(p)) => (s - p).abs() <= question.relative_tolerance * s.abs(),
            _ => false,
        };
        if !same {
            out.push_str(&format!("  {key:?}: ClickHouse {s:?}, Prometheus {p:?}\n"));
        }
    }
    (!out.is_empty()).then_some(out)
}

fn print(question: &Question, table: &Table) {
    println!("== {} ==   {}", question.what, question.promql);
    for ((a, b, c), value) in table {
        println!("  {a:<16} {b:<16} {c:<4} {value:>16}");
    }
}

/// Waits until every attributor of the group holds partitions: traffic before that could be
/// attributed by one replica and again by the next owner of its partition (at least once), and
/// the counters would rightly count it twice where ClickHouse keeps one row per record id.
fn wait_for_assignments(attributors: &[RunningService]) {
    let assigned = "netmeter_attributor_rebalances_total{event=\"assigned\"}";
    let all = netmeter_tests::wait_until(Duration::from_secs(60), || {
        attributors
            .iter()
            .all(|a| a.metric(assigned).is_some_and(|n| n >= 1.0))
    });
    assert!(all, "not every attributor was assigned partitions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_prometheus_shows_what_clickhouse_holds_per_workload_and_zone_pair() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let Metered {
        stack: _stack,
        cluster,
        kernel,
        pipeline,
    } = Metered::start(CLUSTER, dir.path()).await.unwrap();
    let logs = pipeline.launcher.log_dir();
    wait_for_assignments(&pipeline.attributors);
    let prometheus = Prometheus::start(&[
        ScrapeJob::new(
            "collector",
            pipeline.collectors.values().map(|c| c.http_port),
        ),
        ScrapeJob::new(
            "attributor",
            pipeline.attributors.iter().map(|a| a.http_port),
        ),
        ScrapeJob::new("sink", [pipeline.sink.http_port]),
    ])
    .unwrap();
    prometheus.wait_targets_up(Duration::from_secs(30)).unwrap();

    // ClickHouse first: exactly what the kernel counted, line by line.
    let (_traffic, verified) = pipeline::meter_matrix(CLUSTER, 1, (&cluster, &kernel, &pipeline))
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let client = pipeline.launcher.clickhouse();
    println!(
        "ClickHouse held the kernel's counts ({} lines, {} bytes) {:.1} s after the traffic ended",
        verified.expected.len(),
        ledger::total_bytes(&verified.expected),
        verified.waited.as_secs_f64()
    );

    // Then Prometheus: the same rows, once it has scraped the last values (ClickHouse is read
    // again each time: the nodes' own multicast keeps arriving in both).
    let questions = questions();
    let waiting = Instant::now();
    let (stored, scraped) = loop {
        let mut stored = Vec::new();
        let mut scraped = Vec::new();
        for question in &questions {
            stored.push(from_clickhouse(&client, &question.sql).await);
            scraped.push(from_prometheus(&prometheus, question));
        }
        let differences: Vec<String> = questions
            .iter()
            .zip(stored.iter().zip(&scraped))
            .filter_map(|(q, (s, p))| difference(q, s, p).map(|d| format!("{}:\n{d}", q.what)))
            .collect();
        if differences.is_empty() {
            break (stored, scraped);
        }
        if waiting.elapsed() > AGREE_TIMEOUT {
            panic!(
                "Prometheus does not show what ClickHouse holds after {AGREE_TIMEOUT:?}:\n{}\nlogs in {}",
                differences.join(""),
                logs.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    println!(
        "Prometheus agreed with ClickHouse {:.1} s after ClickHouse was complete",
        waiting.elapsed().as_secs_f64()
    );
    for (question, table) in questions.iter().zip(&scraped) {
        print(question, table);
    }
    // The matrix's cross-zone lines are all there, by workload and for the log agent's node.
    let cross_zone_bytes = &stored[0];
    for (namespace, workload, direction) in [
        ("shop", "checkout", "out"),
        ("shop", "db", "in"),
        ("shop", "frontend", "out"),
        ("", "__node__", "out"),
        ("observability", "logs", "in"),
    ] {
        let key = (namespace.into(), workload.into(), direction.into());
        assert!(
            cross_zone_bytes.get(&key).is_some_and(|b| *b > 0.0),
            "no cross-zone bytes for {key:?} in {cross_zone_bytes:#?}"
        );
    }
    // Egress to the internet host, by its country; the alert's expression (its `for` aside)
    // names that country, since the attributors allow only US (tests/src/pipeline.rs).
    let countries = &stored[3];
    let germany = ("DE".to_string(), String::new(), String::new());
    assert!(
        countries.get(&germany).is_some_and(|b| *b > 0.0),
        "{countries:#?}"
    );
    let alerts: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../charts/netmeter/files/alerts.yaml"),
        )
        .unwrap(),
    )
    .unwrap();
    let expr = alerts["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap())
        .find(|r| r["alert"] == "NetmeterEgressToUnexpectedCountry")
        .and_then(|r| r["expr"].as_str())
        .unwrap()
        .to_string();
    let firing: Vec<String> = prometheus
        .query(&expr)
        .unwrap()
        .into_iter()
        .map(|(labels, _)| labels.get("country").cloned().unwrap_or_default())
        .collect();
    assert_eq!(firing, ["DE"], "{expr}");
    let zones = &stored[2];
    for pair in [
        ("us-east-1a", "us-east-1b"),
        ("us-east-1b", "us-east-1a"),
        ("us-east-1a", "none"),
    ] {
        let key = (pair.0.into(), pair.1.into(), "out".into());
        assert!(zones.contains_key(&key), "no {key:?} in {zones:#?}");
    }
    // No pod, node or address labels: the usage series have only these (besides job and
    // instance; an empty value, e.g. the namespace of `__node__`, is no label in Prometheus).
    let series = prometheus
        .query("{__name__=~\"netmeter_workload_.*|netmeter_zone_pair_.*\"}")
        .unwrap();
    assert!(!series.is_empty());
    for (labels, _) in &series {
        let allowed: &[&str] = if labels["__name__"].starts_with("netmeter_zone_pair_") {
            &["zone", "remote_zone", "direction"]
        } else {
            &[
                "namespace",
                "workload_kind",
                "workload",
                "class",
                "direction",
            ]
        };
        let other: Vec<&String> = labels
            .keys()
            .filter(|k| !["__name__", "job", "instance"].contains(&k.as_str()))
            .filter(|k| !allowed.contains(&k.as_str()))
            .collect();
        assert!(other.is_empty(), "{labels:?}");
    }

    // Every service's /metrics is clean for Prometheus's linter.
    let mut services: Vec<(String, &RunningService)> = pipeline
        .collectors
        .iter()
        .map(|(node, c)| (format!("collector {node}"), c))
        .collect();
    services.extend(
        pipeline
            .attributors
            .iter()
            .enumerate()
            .map(|(i, a)| (format!("attributor {i}"), a)),
    );
    services.push(("sink".into(), &pipeline.sink));
    let mut problems = Vec::new();
    for (name, service) in &services {
        let (status, body) = service.get("/metrics").unwrap();
        assert_eq!(status, 200, "{name}");
        for problem in prometheus::check_metrics(&body).unwrap() {
            problems.push(format!("{name}: {problem}"));
        }
    }
    assert!(
        problems.is_empty(),
        "promtool check metrics:\n{}",
        problems.join("\n")
    );
    // The Grafana dashboard works on this data: every panel's SQL (macros substituted) on this
    // ClickHouse, every PromQL on this Prometheus, every metric it names is served.
    netmeter_sink::schema::refresh_rollups_now(
        &client,
        &netmeter_sink::schema::SchemaSettings::default(),
    )
    .await
    .unwrap();
    let bodies: String = services
        .iter()
        .map(|(_, s)| s.get("/metrics").unwrap().1)
        .collect();
    check_dashboard(&client, &prometheus, &bodies).await;

    println!("test took {:.1} s", started.elapsed().as_secs_f64());
    prometheus.stop();
    pipeline.stop();
}

/// What Grafana's ClickHouse plugin substitutes, for the whole of today (UTC) and this cluster.
fn clickhouse_sql(raw: &str) -> String {
    let now = netmeter_tests::records::now_ms() / 1000;
    let (from, to) = (now - 86_400, now + 3_600);
    let mut sql = raw.replace("${cluster:singlequote}", &format!("'{CLUSTER}'"));
    for (macro_, expand) in [
        (
            "$__timeFilter(",
            format!("{{}} >= toDateTime({from}) AND {{}} <= toDateTime({to})"),
        ),
        (
            "$__timeInterval(",
            "toStartOfInterval(toDateTime({}), INTERVAL 60 second)".to_string(),
        ),
    ] {
        while let Some(at) = sql.find(macro_) {
            let rest = &sql[at + macro_.len()..];
            let close = rest.find(')').expect("a macro's argument ends with )");
            let column = &rest[..close];
            let expanded = expand.replace("{}", column);
            sql = format!("{}{expanded}{}", &sql[..at], &rest[close + 1..]);
        }
    }
    assert!(!sql.contains('$'), "a macro is not substituted in {sql}");
    sql
}

/// Every panel of `charts/netmeter/files/dashboard.json`, rows included.
fn panels(dashboard: &serde_json::Value) -> Vec<serde_json::Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        all.push(panel.clone());
        all.extend(panel["panels"].as_array().into_iter().flatten().cloned());
    }
    all
}

async fn check_dashboard(client: &clickhouse::Client, prometheus: &Prometheus, metrics: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../charts/netmeter/files/dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    // What the services serve now, and what they declare (each service's metric list).
    let declared: Vec<&str> = [
        netmeter_collector::metric_list::ALL,
        netmeter_attributor::metric_list::ALL,
        netmeter_sink::metric_list::ALL,
    ]
    .iter()
    .flat_map(|list| list.iter().map(|metric| metric.name))
    .collect();
    let (mut sql_panels, mut promql_panels) = (0, 0);
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().unwrap_or_default();
        for target in panel["targets"].as_array().into_iter().flatten() {
            match target["datasource"]["type"].as_str() {
                Some("grafana-clickhouse-datasource") => {
                    sql_panels += 1;
                    let sql = clickhouse_sql(target["rawSql"].as_str().unwrap());
                    let rows = netmeter_tests::clickhouse::query_text_checked(
                        client,
                        &sql,
                        "TabSeparated",
                    )
                    .await
                    .unwrap_or_else(|e| panic!("panel {title:?}: {e:#}"));
                    assert!(!rows.is_empty(), "panel {title:?} has no data:\n{sql}");
                    // On the rollup; the same question on `flows` must give the same answer.
                    let on_flows = sql.replace("flows_per_minute FINAL", "flows FINAL");
                    let exact = netmeter_tests::clickhouse::query_text_checked(
                        client,
                        &on_flows,
                        "TabSeparated",
                    )
                    .await
                    .unwrap();
                    assert!(
                        same_rows(&rows, &exact),
                        "panel {title:?}: the rollup differs from flows:\n{rows}\n{exact}"
                    );
                }
                Some("prometheus") => {
                    promql_panels += 1;
                    let expr = target["expr"]
                        .as_str()
                        .unwrap()
                        .replace("$__rate_interval", "1m");
                    prometheus
                        .query(&expr)
                        .unwrap_or_else(|e| panic!("panel {title:?}: {e:#}"));
                    for name in metric_names(&expr) {
                        assert!(
                            metrics.contains(&format!("\n{name}"))
                                || declared.contains(&name.as_str()),
                            "panel {title:?} uses {name}, which no service serves or declares"
                        );
                    }
                }
                other => panic!("panel {title:?}: unknown datasource {other:?}"),
            }
        }
    }
    // The cluster variable lists this cluster.
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let cluster = variables.iter().find(|v| v["name"] == "cluster").unwrap();
    let clusters = netmeter_tests::clickhouse::query_text_checked(
        client,
        cluster["query"].as_str().unwrap(),
        "TabSeparated",
    )
    .await
    .unwrap();
    assert!(clusters.lines().any(|c| c == CLUSTER), "{clusters}");
    println!("dashboard: {sql_panels} ClickHouse and {promql_panels} Prometheus queries answer");
    assert!(sql_panels >= 6 && promql_panels >= 10);
}

/// The `netmeter_…` metric names in a PromQL expression (a histogram's series by its family).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("netmeter_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.push(name);
    }
    names
}

/// Equal tab-separated rows, numbers to 1e-9 relative (sums of floats in another order).
fn same_rows(a: &str, b: &str) -> bool {
    let fields = |text: &str| -> Vec<Vec<String>> {
        text.lines()
            .map(|l| l.split('\t').map(String::from).collect())
            .collect()
    };
    let (a, b) = (fields(a), fields(b));
    a.len() == b.len()
        && a.iter().zip(&b).all(|(x, y)| {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|(u, v)| match (u.parse::<f64>(), v.parse::<f64>()) {
                        (Ok(u), Ok(v)) => (u - v).abs() <= 1e-9 * u.abs().max(v.abs()),
                        _ => u == v,
                    })
        })
}
