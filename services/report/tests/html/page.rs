//! The checks any report page must pass once Chromium has drawn it, whatever the data: it is
//! self-contained, draws without a console message or a network request, every chart got the
//! rows of its table, and every table and card shows exactly the report's values, formatted so
//! the text reads back as the same number.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::chromium::{self, PageRun};
use super::dom;
use super::model::{Kind, Report, Table};

/// The charts the page draws: (section, table, the column the chart's `data-total` sums).
pub const CHARTS: [(&str, &str, &str); 8] = [
    ("overview", "cost_over_time", "cost_usd"),
    ("overview", "sankey", "bytes"),
    ("cross_zone", "zone_matrix", "sent_bytes"),
    ("cross_zone", "top_pairs", "sent_bytes"),
    ("egress", "destinations", "sent_bytes"),
    ("egress_destinations", "countries", "sent_bytes"),
    ("throughput", "node_over_time", "out_bps"),
    ("cost_by_day", "namespaces", "cost_usd"),
];

/// A drawn chart: how many rows it got and their sum.
#[derive(Debug)]
pub struct Chart {
    pub points: u64,
    pub total: f64,
}

/// What the checked page shows, for comparisons with SQL.
pub struct Shown {
    pub dom: String,
    /// `data-chart` -> what it drew.
    pub charts: BTreeMap<String, Chart>,
    /// Card name (a class, or "All classes") -> field -> exact value.
    pub cards: BTreeMap<String, BTreeMap<String, f64>>,
}

impl Shown {
    /// The rows of a table as the page shows them: column name -> exact value (`data-value`,
    /// null when absent), typed as the report's columns.
    pub fn rows(
        &self,
        report: &Report,
        section: &str,
        table: &str,
    ) -> Vec<serde_json::Map<String, Value>> {
        let t = find(report, section, table);
        dom::table(&self.dom, &format!("{section}.{table}"))
            .unwrap_or_else(|| panic!("the page has no table {section}.{table}"))
            .into_iter()
            .map(|row| {
                row.iter()
                    .zip(&t.columns)
                    .map(|(cell, column)| {
                        let value = match (&cell.value, column.kind) {
                            (None, _) => Value::Null,
                            (Some(v), Kind::Text | Kind::Time) => Value::String(v.clone()),
                            (Some(v), _) => serde_json::from_str(v).unwrap_or_else(|_| {
                                panic!("{section}.{table}.{}: {v:?}", column.name)
                            }),
                        };
                        (column.name.to_string(), value)
                    })
                    .collect()
            })
            .collect()
    }
}

pub fn find<'a>(report: &'a Report, section: &str, table: &str) -> &'a Table {
    report
        .table(section, table)
        .unwrap_or_else(|| panic!("the report has no table {section}.{table}"))
}

/// Writes `html` to `dir/report.html`, opens it in Chromium and runs every check.
pub fn check(report: &Report, html: &str, dir: &Path) -> Shown {
    assert_self_contained(html);
    let page = dir.join("report.html");
    std::fs::write(&page, html).unwrap();
    let run = chromium::open(&page, &chromium::work_dir(dir, "chromium"));
    assert_clean(&run);
    let shown = Shown {
        charts: charts(&run.dom),
        cards: cards(&run.dom),
        dom: run.dom,
    };
    for (section, table, column) in CHARTS {
        let t = find(report, section, table);
        let chart = shown
            .charts
            .get(table)
            .unwrap_or_else(|| panic!("no chart drawn for {section}.{table}"));
        assert!(chart.points > 0, "the {table} chart has no data");
        assert_eq!(chart.points, t.rows.len() as u64, "rows drawn by {table}");
        let sum: f64 = values(t, column).iter().filter_map(Value::as_f64).sum();
        assert_close(chart.total, sum, &format!("{table} chart total"));
    }
    assert_eq!(shown.charts.len(), CHARTS.len(), "{:?}", shown.charts);
    for section in &report.sections {
        for table in &section.tables {
            check_table(&shown.dom, section.id, table);
        }
    }
    check_cards(report, &shown);
    shown
}

/// No resource of the page comes from the network: no `src`/`href` to http(s), no CSS `url()`
/// or `@import`, no module `import` of a URL. URLs as text (licences, the SVG namespace inside
/// the chart library) and the `href` of a link (`<a>`: the data credits) are not loads.
pub fn assert_self_contained(html: &str) {
    let loads = remote_loads(html);
    assert!(
        loads.is_empty(),
        "the page loads resources from the network: {loads:?}"
    );
}

/// What in `html` would load from the network, each with the text around it.
pub fn remote_loads(html: &str) -> Vec<String> {
    let lower = html.to_ascii_lowercase();
    let mut found = Vec::new();
    for pattern in ["src=", "href=", "url(", "@import", "import(", "import "] {
        for (i, _) in lower.match_indices(pattern) {
            let in_link = pattern == "href="
                && lower[..i]
                    .rfind('<')
                    .is_some_and(|open| lower[open + 1..i].split([' ', '\n']).next() == Some("a"));
            if in_link {
                continue;
            }
            let after = lower[i + pattern.len()..].trim_start_matches([' ', '"', '\'', '`']);
            if ["http:", "https:", "//"]
                .iter()
                .any(|p| after.starts_with(p))
            {
                let end = html.ceil_char_boundary((i + 80).min(html.len()));
                found.push(html[i..end].to_string());
            }
        }
    }
    found
}

/// The page drew itself, wrote nothing to the console and requested nothing.
pub fn assert_clean(run: &PageRun) {
    let problems = problems(run);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// What is wrong with a page load: console output, requests, or no `data-rendered="ok"`.
pub fn problems(run: &PageRun) -> Vec<String> {
    let mut problems: Vec<String> = run
        .console
        .iter()
        .map(|line| format!("console: {line}"))
        .collect();
    problems.extend(run.requests.iter().map(|url| format!("request: {url}")));
    let rendered = dom::body_attr(&run.dom, "data-rendered");
    if rendered.as_deref() != Some("ok") {
        problems.push(format!("the page did not finish drawing: {rendered:?}"));
    }
    problems
}

fn charts(dom: &str) -> BTreeMap<String, Chart> {
    dom::elements(dom, "div")
        .into_iter()
        .filter_map(|div| {
            let name = div.attr("data-chart")?.to_string();
            let points = div
                .attr("data-points")
                .unwrap_or_else(|| panic!("the {name} chart was not drawn"));
            let chart = Chart {
                points: points.parse().unwrap(),
                total: div.attr("data-total").map_or(0.0, |t| t.parse().unwrap()),
            };
            Some((name, chart))
        })
        .collect()
}

fn cards(dom: &str) -> BTreeMap<String, BTreeMap<String, f64>> {
    dom.split("data-card=\"")
        .skip(1)
        .map(|chunk| {
            let name = chunk[..chunk.find('"').unwrap()].to_string();
            let fields = dom::elements(&format!("<x {chunk}"), "span")
                .into_iter()
                .filter_map(|span| {
                    let field = span.attr("data-field")?.to_string();
                    let value = span.attr("data-value")?.parse().unwrap();
                    Some((field, value))
                })
                .collect();
            (name, fields)
        })
        .collect()
}

fn values(table: &Table, column: &str) -> Vec<Value> {
    let i = table
        .columns
        .iter()
        .position(|c| c.name == column)
        .unwrap_or_else(|| panic!("{} has no column {column}", table.id));
    table.rows.iter().map(|r| r[i].clone()).collect()
}

/// The page's table holds the report's rows, cell by cell: the exact value in `data-value`, and
/// a text that reads back as that value.
fn check_table(dom: &str, section: &str, table: &Table) {
    let name = format!("{section}.{}", table.id);
    if table.rows.is_empty() {
        return;
    }
    let rows = dom::table(dom, &name).unwrap_or_else(|| panic!("the page has no table {name}"));
    assert_eq!(rows.len(), table.rows.len(), "rows of {name}");
    for (r, (shown, row)) in rows.iter().zip(&table.rows).enumerate() {
        assert_eq!(shown.len(), row.len(), "cells of {name} row {r}");
        for ((cell, value), column) in shown.iter().zip(row).zip(&table.columns) {
            let at = format!("{name} row {r} {}", column.name);
            match value {
                Value::Null => {
                    assert_eq!(cell.value, None, "{at}");
                    assert_eq!(cell.text, "—", "{at}");
                }
                Value::String(s) => {
                    assert_eq!(cell.value.as_deref(), Some(s.as_str()), "{at}");
                    assert_eq!(&cell.text, s, "{at}");
                }
                Value::Number(n) => {
                    let exact = cell
                        .value
                        .as_deref()
                        .unwrap_or_else(|| panic!("{at}: no value"));
                    if let Some(i) = n.as_u64() {
                        assert_eq!(exact.parse::<u64>().ok(), Some(i), "{at}");
                    } else {
                        assert_eq!(exact.parse::<f64>().ok(), n.as_f64(), "{at}");
                    }
                    let v = n.as_f64().unwrap();
                    let read =
                        read_back(column.kind, column.name, &cell.text).unwrap_or_else(|| {
                            panic!("{at}: {:?} is not a {:?}", cell.text, column.kind)
                        });
                    assert!(
                        within_rounding(column.kind, column.name, read, v),
                        "{at}: {:?} shows {v}",
                        cell.text
                    );
                }
                Value::Bool(b) => {
                    assert_eq!(cell.value.as_deref(), Some(b.to_string().as_str()), "{at}");
                    assert_eq!(cell.text, if *b { "yes" } else { "no" }, "{at}");
                }
                other => panic!("{at}: unexpected value {other}"),
            }
        }
    }
}

/// The number a formatted cell says, in the column's base unit. A `change_*` column is signed
/// and its ratio a percentage.
fn read_back(kind: Kind, name: &str, text: &str) -> Option<f64> {
    let change = name.starts_with("change");
    let text = if change {
        text.strip_prefix('+').unwrap_or(text)
    } else {
        text
    };
    if change && kind == Kind::Ratio {
        return Some(text.strip_suffix('%')?.parse::<f64>().ok()? / 100.0);
    }
    let scaled = |units: &[&str], base: f64| -> Option<f64> {
        let (number, unit) = text.split_once(' ')?;
        let power = units.iter().position(|u| *u == unit)?;
        Some(number.parse::<f64>().ok()? * base.powi(power as i32))
    };
    match kind {
        Kind::Bytes => scaled(&["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"], 1024.0),
        Kind::BitsPerSecond => scaled(&["bit/s", "kbit/s", "Mbit/s", "Gbit/s", "Tbit/s"], 1000.0),
        Kind::Usd => {
            let negative = text.starts_with('-');
            let v: f64 = text
                .trim_start_matches('-')
                .strip_prefix('$')?
                .replace(',', "")
                .parse()
                .ok()?;
            Some(if negative { -v } else { v })
        }
        Kind::Count => text.replace(',', "").parse().ok(),
        Kind::Ratio => text.parse().ok(),
        Kind::Fraction => Some(text.strip_suffix('%')?.parse::<f64>().ok()? / 100.0),
        Kind::Text | Kind::Time | Kind::Bool => None,
    }
}

/// Whether `read` is `v` as its format rounds it: three significant digits for scaled units,
/// cents (two significant digits under a cent), two decimals for ratios, 0.1 % for fractions.
fn within_rounding(kind: Kind, name: &str, read: f64, v: f64) -> bool {
    let error = (read - v).abs();
    match kind {
        Kind::Ratio if name.starts_with("change") => error <= 0.0005 + 1e-9,
        Kind::Bytes | Kind::BitsPerSecond => error <= v.abs() * 0.006 + 0.5,
        Kind::Usd if v.abs() >= 0.01 => error <= 0.005 + 1e-9,
        Kind::Usd => error <= v.abs() * 0.05 + 1e-12,
        Kind::Count => error == 0.0,
        Kind::Ratio => error <= 0.005 + 1e-9,
        Kind::Fraction => error <= 0.0005 + 1e-9,
        Kind::Text | Kind::Time | Kind::Bool => false,
    }
}

/// The overview cards show `by_class`: one card per class and one for all of them.
fn check_cards(report: &Report, shown: &Shown) {
    let by_class = find(report, "overview", "by_class");
    let fields = ["sent_bytes", "received_bytes", "cost_usd"];
    let mut all = BTreeMap::new();
    for row in &by_class.rows {
        let class = row[0].as_str().unwrap();
        let card = shown
            .cards
            .get(class)
            .unwrap_or_else(|| panic!("no card for {class}"));
        for field in fields {
            let v = values(by_class, field);
            let i = by_class.rows.iter().position(|r| r == row).unwrap();
            let expected = v[i].as_f64().unwrap();
            assert_close(card[field], expected, &format!("card {class} {field}"));
            *all.entry(field).or_insert(0.0) += expected;
        }
    }
    for field in fields {
        assert_close(
            shown.cards["All classes"][field],
            all[field],
            &format!("card All classes {field}"),
        );
    }
    assert_eq!(shown.cards.len(), by_class.rows.len() + 1, "cards");
}

/// Equal up to float summation order (dollars are sums of many small floats).
pub fn assert_close(actual: f64, expected: f64, what: &str) {
    assert!(
        (actual - expected).abs() <= 1e-6 * expected.abs().max(1.0),
        "{what}: the page shows {actual}, expected {expected}"
    );
}
